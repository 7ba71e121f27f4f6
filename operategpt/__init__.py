"""OperateGPT: a gateway that puts many model inference services behind one API."""

__version__ = "0.1.0"
