"""The live view: an HTTP page with each source's annotated picture (MJPEG) and its
object list (Server-Sent Events). ``hub`` holds the newest picture and event per
source; ``server`` serves them; ``page.html``, ``app.js`` and ``style.css`` are the
page (package data, no external resources). The sink that feeds it is
``stream.sinks.live``."""
