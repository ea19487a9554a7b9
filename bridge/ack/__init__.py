"""bridge.ack"""
