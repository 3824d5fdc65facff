"""Authorization, as far as it goes before ACLs land: every principal may do everything.

Kafka reports authorized operations as a bit field over its AclOperation codes. Until an
authorizer exists, every operation that applies to a resource type is reported as allowed, as a
Kafka broker without an authorizer does. Handlers will call `authorize(principal, operation,
resource)` here once ACLs exist.
"""

# AclOperation codes (Kafka's org.apache.kafka.common.acl.AclOperation).
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION = 3, 4, 5, 6, 7, 8, 9
DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 10, 11, 12

# Kafka's sentinel meaning "not requested": INT32_MIN.
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)


def _bits(*operations: int) -> int:
    value = 0
    for operation in operations:
        value |= 1 << operation
    return value


ALL_TOPIC_OPERATIONS = _bits(READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS)
CLUSTER_OPERATIONS = _bits(CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
                           IDEMPOTENT_WRITE)
GROUP_OPERATIONS = _bits(READ, DELETE, DESCRIBE)


def authorize(principal: str, operation: int, resource_type: str, resource_name: str) -> bool:
    """Whether `principal` may perform `operation` on the resource. No authorizer: always."""
    return True
