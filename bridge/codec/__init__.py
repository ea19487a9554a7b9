"""bridge.codec"""
