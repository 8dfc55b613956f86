"""Elastic supernets (APQ, issue 6): one set of weights for a space of architectures."""

from autocompress.elastic.encoding import QuantSubnet
from autocompress.elastic.space import ElasticSpace
from autocompress.elastic.supernet import (
    ElasticCNN,
    ElasticCNN1d,
    ElasticCNN2d,
    ElasticMixin,
    ElasticModel,
    StageConfig,
    SubnetConfig,
)
from autocompress.elastic.train import subnet_metric, train_supernet

__all__ = [
    "ElasticCNN",
    "ElasticCNN1d",
    "ElasticCNN2d",
    "ElasticMixin",
    "ElasticModel",
    "ElasticSpace",
    "QuantSubnet",
    "StageConfig",
    "SubnetConfig",
    "subnet_metric",
    "train_supernet",
]
