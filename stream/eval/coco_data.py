"""Labelled detection datasets (COCO or YOLO format) as one in-memory COCO ground truth.

``load_dataset`` reads either

- COCO: an annotations JSON (``instances_val2017.json``) plus the folder of its
  images (only needed when a detector has to run), or
- YOLO: ``images/`` and ``labels/`` folders (label ``labels/a/b.txt`` belongs to
  image ``images/a/b.jpg``; one ``class cx cy w h`` row per box, normalised to
  [0, 1] by the image width and height; polygon rows ``class x1 y1 x2 y2 …`` are
  turned into their bounding box) with class names from ``data.yaml``
  (``names:`` as a list or an {index: name} mapping, ``path:`` and ``val:``/``test:``
  as Ultralytics writes them) or ``classes.txt`` (one name per line).

and returns a ``DetectionDataset``: a COCO dataset dict (images with id,
file_name, width, height; categories; annotations with bbox [x, y, w, h] in image
pixels, area, iscrowd) and where each image file is. YOLO class index i becomes
category id i.

Bad input never stops the load: each problem (an annotation on an unknown image
or category, a label row with an unknown class, a box partly or wholly outside
its image, a label file without an image, an image that cannot be read) is
logged with the file (and line) it came from, kept in ``problems``, and only that
item is dropped or clipped. An empty dataset or unreadable annotation file
raises SourceError.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stream.errors import SourceError
from stream.imageio import IMAGE_EXTENSIONS, read_image
from stream.objects import COCO80_TO_91, category_ids  # noqa: F401  (re-exported for eval users)

log = logging.getLogger(__name__)

def quiet_coco(dataset: dict[str, Any]) -> Any:
    """A pycocotools ``COCO`` built from a dataset dict in memory, without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@dataclass
class DetectionDataset:
    """Ground truth in COCO form.

    coco: dataset dict {"images": [{id, file_name, width, height}], "categories":
        [{id, name}], "annotations": [{id ≥ 1, image_id, category_id, bbox [x, y, w, h]
        float pixels, area, iscrowd}]}.
    image_paths: image id → file (it may be missing or unreadable: checked when read).
    problems: one line per dropped or corrected item, naming its file (and line).
    kind: "coco" or "yolo"; root: what was given.
    """

    coco: dict[str, Any]
    image_paths: dict[int, Path]
    problems: list[str] = field(default_factory=list)
    kind: str = "coco"
    root: Path = Path()

    @property
    def categories(self) -> list[tuple[int, str]]:
        return [(int(c["id"]), str(c["name"])) for c in self.coco["categories"]]

    def problem(self, message: str) -> None:
        log.warning("%s", message)
        self.problems.append(message)

    def drop_images(self, ids: set[int]) -> None:
        """Remove images (and their annotations) that cannot be evaluated."""
        c = self.coco
        c["images"] = [im for im in c["images"] if im["id"] not in ids]
        c["annotations"] = [a for a in c["annotations"] if a["image_id"] not in ids]
        for i in ids:
            self.image_paths.pop(i, None)


def load_dataset(data: Path, *, images: Path | None = None, split: str = "val") -> DetectionDataset:
    """COCO (``data`` is a .json file) or YOLO (``data`` is a folder or a data.yaml)."""
    data = Path(data).expanduser()
    if not data.exists():
        raise SourceError(
            f"dataset {data} does not exist; give a COCO annotations .json, a YOLO folder or data.yaml"
        )
    if data.is_file() and data.suffix.lower() == ".json":
        return load_coco(data, images)
    return load_yolo(data, split=split, images=images)


# --- COCO -----------------------------------------------------------------------------------------


def _coco_images_dir(ann: Path, images: Path | None) -> Path:
    if images is not None:
        return Path(images).expanduser()
    split = ann.stem.split("_")[-1]  # instances_val2017 → val2017
    for cand in (
        ann.parent.parent / split,
        ann.parent / split,
        ann.parent / "images" / split,
        ann.parent / "images",
    ):
        if cand.is_dir():
            return cand
    return ann.parent


def load_coco(ann: Path, images: Path | None = None) -> DetectionDataset:
    """A COCO annotations file; ``images`` is the folder of its file_names (default: the
    sibling folder named after the file's split, e.g. ../val2017 for instances_val2017.json)."""
    try:
        raw = json.loads(ann.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"cannot read COCO annotations {ann}: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in ("images", "categories")):
        raise SourceError(f"{ann} is not a COCO annotations file (need 'images' and 'categories' lists)")
    img_dir = _coco_images_dir(ann, images)
    ds = DetectionDataset({"images": [], "categories": [], "annotations": []}, {}, kind="coco", root=ann)
    sizes: dict[int, tuple[int, int]] = {}
    for i, im in enumerate(raw["images"]):
        try:
            iid, name = int(im["id"]), str(im["file_name"])
            im_w, im_h = int(im["width"]), int(im["height"])
        except (KeyError, TypeError, ValueError):
            ds.problem(f"{ann}: images[{i}] lacks id, file_name, width or height; ignored")
            continue
        if iid in sizes:
            ds.problem(f"{ann}: image id {iid} ({name}) appears twice; the second is ignored")
            continue
        sizes[iid] = (im_w, im_h)
        ds.coco["images"].append({"id": iid, "file_name": name, "width": im_w, "height": im_h})
        ds.image_paths[iid] = img_dir / name
    cats: set[int] = set()
    for i, c in enumerate(raw["categories"]):
        try:
            cid, cname = int(c["id"]), str(c["name"])
        except (KeyError, TypeError, ValueError):
            ds.problem(f"{ann}: categories[{i}] lacks id or name; ignored")
            continue
        cats.add(cid)
        ds.coco["categories"].append({"id": cid, "name": cname, "supercategory": c.get("supercategory", "")})
    names = {im["id"]: im["file_name"] for im in ds.coco["images"]}
    next_id = 1
    for i, a in enumerate(raw.get("annotations") or []):
        where = f"{ann}: annotation {a.get('id', f'#{i}') if isinstance(a, dict) else f'#{i}'}"
        if not isinstance(a, dict):
            ds.problem(f"{where}: not an object; ignored")
            continue
        try:
            iid, cid = int(a["image_id"]), int(a["category_id"])
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            ds.problem(f"{where}: needs image_id, category_id and bbox [x, y, w, h]; ignored")
            continue
        if iid not in sizes:
            ds.problem(f"{where}: image_id {iid} is not in the file's images; ignored")
            continue
        if cid not in cats:
            ds.problem(f"{where} ({names[iid]}): category_id {cid} is not in the file's categories; ignored")
            continue
        box = _clip_box(x, y, w, h, *sizes[iid], f"{where} ({names[iid]})", ds)
        if box is None:
            continue
        crowd = int(a.get("iscrowd", 0) or 0)
        area = float(a["area"]) if isinstance(a.get("area"), int | float) else box[2] * box[3]
        entry = {
            "id": next_id,
            "image_id": iid,
            "category_id": cid,
            "bbox": box,
            "area": area,
            "iscrowd": crowd,
        }
        if crowd and "segmentation" in a:
            entry["segmentation"] = a["segmentation"]  # COCOeval uses crowd regions' boxes only for bbox
        ds.coco["annotations"].append(entry)
        next_id += 1
    if not ds.coco["images"]:
        raise SourceError(f"{ann} lists no usable images")
    if not ds.coco["categories"]:
        raise SourceError(f"{ann} lists no usable categories")
    return ds


def _clip_box(
    x: float, y: float, w: float, h: float, width: int, height: int, where: str, ds: DetectionDataset
) -> list[float] | None:
    """[x, y, w, h] clipped to the image; None (and a problem) when nothing is left."""
    if not all(np.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        ds.problem(f"{where}: box [{x:g}, {y:g}, {w:g}, {h:g}] has no area; ignored")
        return None
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        ds.problem(
            f"{where}: box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {width}x{height} image; ignored"
        )
        return None
    tol = 0.5  # half a pixel: rounding in the annotation tool, not an error
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        ds.problem(
            f"{where}: box [{x:g}, {y:g}, {w:g}, {h:g}] extends outside the {width}x{height} image; clipped"
        )
    return [x0, y0, x1 - x0, y1 - y0]


# --- YOLO -----------------------------------------------------------------------------------------


def _read_names(src: Path) -> list[str]:
    if src.suffix.lower() in (".yaml", ".yml"):
        try:
            cfg = yaml.safe_load(src.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SourceError(f"{src} is not valid YAML: {exc}") from exc
        names = cfg.get("names") if isinstance(cfg, dict) else None
        if isinstance(names, dict):
            try:
                index = {int(k): str(v) for k, v in names.items()}
            except (TypeError, ValueError) as exc:
                raise SourceError(f"{src}: names must map class indices to names: {exc}") from exc
            if sorted(index) != list(range(len(index))):
                raise SourceError(f"{src}: names must number the classes 0…{len(index) - 1} without gaps")
            return [index[i] for i in range(len(index))]
        if isinstance(names, list) and names:
            return [str(n) for n in names]
        raise SourceError(f"{src} has no 'names' (a list, or a mapping of class index → name)")
    lines = [ln.strip() for ln in src.read_text().splitlines()]
    names = [ln for ln in lines if ln]
    if not names:
        raise SourceError(f"{src} lists no class names (one per line)")
    return names


def _yolo_layout(data: Path, split: str, images: Path | None) -> tuple[Path, list[str], Path]:
    """(images folder, class names, where the names came from)."""
    if data.is_file():
        names_file = data
        root = data.parent
    else:
        root = data
        cands = [root / n for n in ("data.yaml", "dataset.yaml", "data.yml", "classes.txt")]
        found = [c for c in cands if c.is_file()]
        if not found:
            raise SourceError(f"{root}: no data.yaml or classes.txt with the class names")
        names_file = found[0]
    names = _read_names(names_file)
    if images is not None:
        return Path(images).expanduser(), names, names_file
    if names_file.suffix.lower() in (".yaml", ".yml"):
        cfg = yaml.safe_load(names_file.read_text()) or {}
        base = Path(str(cfg["path"])).expanduser() if isinstance(cfg, dict) and cfg.get("path") else root
        if not base.is_absolute():
            base = root / base
        entry = cfg.get(split) if isinstance(cfg, dict) else None
        if isinstance(entry, str):
            cand = Path(entry) if Path(entry).is_absolute() else base / entry
            if cand.is_dir():
                return cand, names, names_file
        root = base
    for cand in (root / "images" / split, root / "images"):
        if cand.is_dir():
            return cand, names, names_file
    raise SourceError(f"{root}: no images/ folder (looked for images/{split} and images)")


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last 'images' folder in the path becomes 'labels', suffix .txt."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, else by decoding; None when unreadable."""
    import imagesize

    try:
        w, h = imagesize.get(str(path))
    except (OSError, ValueError):
        w, h = -1, -1
    if w > 0 and h > 0:
        return int(w), int(h)

    try:
        img = read_image(path)
    except SourceError:
        return None
    return int(img.shape[1]), int(img.shape[0])


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
    )


def _label_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = line.split()
        if fields:
            yield n, fields


def load_yolo(data: Path, *, split: str = "val", images: Path | None = None) -> DetectionDataset:
    """A YOLO-format dataset (see module doc)."""
    img_dir, names, names_file = _yolo_layout(data, split, images)
    files = _list_images(img_dir)
    if not files:
        raise SourceError(f"{img_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    ds = DetectionDataset(
        {"images": [], "categories": [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(names)],
         "annotations": []},
        {}, kind="yolo", root=data,
    )  # fmt: skip
    used_labels: set[Path] = set()
    next_id = 1
    for iid, path in enumerate(files, start=1):
        label = _label_path(path)
        used_labels.add(label)
        size = _image_size(path)
        if size is None:
            ds.problem(
                f"{path}: cannot read the image (not an image, or corrupt); it and its labels are skipped"
            )
            continue
        width, height = size
        ds.coco["images"].append(
            {"id": iid, "file_name": path.relative_to(img_dir).as_posix(), "width": width, "height": height}
        )
        ds.image_paths[iid] = path
        if not label.is_file():
            continue  # a background image: no objects
        for line, fields in _label_rows(label):
            where = f"{label}:{line}"
            box = _yolo_row(fields, names, where, width, height, ds, names_file)
            if box is None:
                continue
            cid, bbox = box
            ds.coco["annotations"].append(
                {"id": next_id, "image_id": iid, "category_id": cid, "bbox": bbox, "area": bbox[2] * bbox[3],
                 "iscrowd": 0}
            )  # fmt: skip
            next_id += 1
    label_root = _label_path(img_dir / "x.jpg").parent
    if label_root.is_dir():
        for label in sorted(label_root.rglob("*.txt")):
            if label not in used_labels and label.name != "classes.txt":
                ds.problem(f"{label}: no image of that name under {img_dir}; its labels are ignored")
    if not ds.coco["images"]:
        raise SourceError(f"no readable images in {img_dir}")
    return ds


def _yolo_row(
    fields: list[str],
    names: list[str],
    where: str,
    width: int,
    height: int,
    ds: DetectionDataset,
    names_file: Path,
) -> tuple[int, list[float]] | None:
    try:
        cls_f = float(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        ds.problem(f"{where}: not numbers ({' '.join(fields)[:60]}); row ignored")
        return None
    if cls_f != int(cls_f) or not 0 <= int(cls_f) < len(names):
        ds.problem(
            f"{where}: class {fields[0]} is not one of the {len(names)} classes in {names_file.name} "
            f"(0…{len(names) - 1}); box ignored"
        )
        return None
    if len(values) == 4:
        cx, cy, w, h = values
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    elif len(values) >= 6 and len(values) % 2 == 0:  # a polygon (segmentation label): its box
        xs, ys = values[0::2], values[1::2]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    else:
        ds.problem(
            f"{where}: expected 'class cx cy w h' (or a polygon), got {len(fields)} fields; row ignored"
        )
        return None
    box = _clip_box(x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height, width, height, where, ds)
    return (int(cls_f), box) if box is not None else None
