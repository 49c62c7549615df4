"""stream.models"""
