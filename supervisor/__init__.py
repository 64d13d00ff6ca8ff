"""supervise: a workload-side training supervisor for Kubernetes."""

__version__ = "0.1.0"
