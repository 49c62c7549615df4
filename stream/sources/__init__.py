"""stream.sources"""
