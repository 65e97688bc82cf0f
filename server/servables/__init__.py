"""Model formats. The only package of Verso that imports the TensorFlow runtime."""
