"""Where generations run: the `GenerationBackend` protocol, the local worker thread, Ray Serve."""
