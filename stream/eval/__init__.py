"""stream.eval"""
