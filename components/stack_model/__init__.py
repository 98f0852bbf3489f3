"""Stack files, validated: YAML in, a StackSpec (or one SpecError naming every problem) out."""

from .broker import BrokerSpec
from .broker_common import BrokerStorage
from .brokers import AnyBrokerSpec
from .common import ComputeResources
from .load import load_stack_spec, parse_stack_spec, stack_file
from .names import kubernetes_name
from .problems import Problem, SpecError
from .rabbitmq_broker import RabbitMQBrokerSpec
from .stack import StackSpec
from .task_server import TaskServerSpec

__all__ = [
    "AnyBrokerSpec",
    "BrokerSpec",
    "BrokerStorage",
    "ComputeResources",
    "Problem",
    "RabbitMQBrokerSpec",
    "SpecError",
    "StackSpec",
    "TaskServerSpec",
    "kubernetes_name",
    "load_stack_spec",
    "parse_stack_spec",
    "stack_file",
]
