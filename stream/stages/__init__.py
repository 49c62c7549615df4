"""stream.stages"""
