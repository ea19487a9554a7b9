"""bridge.sink"""
