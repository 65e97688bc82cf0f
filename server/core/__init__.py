"""Transport-agnostic core of Verso. Nothing here imports grpc or TensorFlow's runtime."""
