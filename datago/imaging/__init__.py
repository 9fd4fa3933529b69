"""Pure image functions: decode, aspect-ratio buckets, crop/resize, colour conversion, encode."""
