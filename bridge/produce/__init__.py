"""bridge.produce"""
