"""The source side: slot, capture, test_decoding parsing, catalog and value converters."""
