"""The transcriber gRPC server: faster-whisper behind a streaming policy."""
