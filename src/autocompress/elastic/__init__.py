"""Elastic supernets (APQ, issue 6): one set of weights for a space of architectures."""

from autocompress.elastic.supernet import ElasticCNN1d, ElasticModel, StageConfig, SubnetConfig
from autocompress.elastic.train import subnet_metric, train_supernet

__all__ = ["ElasticCNN1d", "ElasticModel", "StageConfig", "SubnetConfig", "subnet_metric", "train_supernet"]
