"""stream.sinks"""
