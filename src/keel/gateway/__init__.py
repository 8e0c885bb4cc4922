"""The request path: Call, Reply, the pipeline and its stages."""
