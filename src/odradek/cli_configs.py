"""`odradek configs`: describe and alter topic and broker configs, as Kafka's kafka-configs.sh.

    odradek configs describe (--topic NAME | --broker ID | --broker-defaults) [--all]
        the dynamic configs of the entity (with --all: every config), each with its source and
        synonyms, one per line: `name=value source=... synonyms={SOURCE:name=value, ...}`
    odradek configs alter (--topic NAME | --broker ID | --broker-defaults)
        [--add-config k=v[,k=v...]] [--delete-config k[,k...]]
        [--append-config k=v] [--subtract-config k=v] [--validate-only]

`alter` sends one IncrementalAlterConfigs request (SET, DELETE, APPEND, SUBTRACT); the broker
validates it (INVALID_CONFIG with its message), writes it to its metadata log and applies it at
once. `--broker-defaults` is the cluster-wide default entity (resource name ""), `--broker ID` one
broker. Only argparse is imported at start; the client loads when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

DESCRIBE_CONFIGS, INCREMENTAL_ALTER_CONFIGS = 32, 44
TOPIC, BROKER = 2, 4
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3
SOURCE_NAMES = {0: "UNKNOWN", 1: "DYNAMIC_TOPIC_CONFIG", 2: "DYNAMIC_BROKER_CONFIG",
                3: "DYNAMIC_DEFAULT_BROKER_CONFIG", 4: "STATIC_BROKER_CONFIG", 5: "DEFAULT_CONFIG",
                6: "DYNAMIC_BROKER_LOGGER_CONFIG"}
# Versions this module builds and reads (one code path per API over the range).
CONFIGS_CLIENT_VERSIONS: dict[int, tuple[int, int]] = {DESCRIBE_CONFIGS: (1, 4), INCREMENTAL_ALTER_CONFIGS: (0, 1)}


def add_parser(commands: Any, add_bootstrap: Any) -> None:
    """Add the `configs` command and its actions to the CLI's subparsers."""
    configs = commands.add_parser("configs", help="describe and alter topic and broker configs")
    actions = configs.add_subparsers(dest="configs_command", metavar="ACTION")
    actions.required = True
    describe = actions.add_parser("describe", help="show an entity's configs with sources and synonyms")
    _add_entity(describe)
    describe.add_argument("--all", action="store_true", help="every config, not only dynamic ones")
    add_bootstrap(describe)
    alter = actions.add_parser("alter", help="set, delete, append to or subtract from configs")
    _add_entity(alter)
    alter.add_argument("--add-config", action="append", default=[], metavar="K=V[,K=V...]",
                       help="set configs (a value with commas in [brackets]), repeatable")
    alter.add_argument("--delete-config", action="append", default=[], metavar="K[,K...]",
                       help="remove overrides, repeatable")
    alter.add_argument("--append-config", action="append", default=[], metavar="K=V",
                       help="add items to a list config (cleanup.policy), repeatable")
    alter.add_argument("--subtract-config", action="append", default=[], metavar="K=V",
                       help="remove items from a list config, repeatable")
    alter.add_argument("--validate-only", action="store_true", help="check without changing anything")
    add_bootstrap(alter)


def _add_entity(parser: argparse.ArgumentParser) -> None:
    entity = parser.add_mutually_exclusive_group(required=True)
    entity.add_argument("--topic", metavar="NAME")
    entity.add_argument("--broker", metavar="ID")
    entity.add_argument("--broker-defaults", action="store_true", help="the cluster-wide broker defaults")


def entity_of(args: argparse.Namespace) -> tuple[int, str, str]:
    """(resource type, resource name, words for messages)."""
    if args.topic is not None:
        return TOPIC, args.topic, f"topic {args.topic!r}"
    if args.broker is not None:
        return BROKER, args.broker, f"broker {args.broker}"
    return BROKER, "", "the broker defaults"


def split_pairs(items: list[str]) -> list[tuple[str, str]]:
    """`k=v,k2=[a,b]` (repeatable) -> [(k, v), (k2, "a,b")], as kafka-configs.sh parses them."""
    from odradek.cli import CliError

    pairs = []
    for item in items:
        text, depth, current = item, 0, ""
        parts = []
        for ch in text:
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(current)
                current = ""
            else:
                current += ch
        parts.append(current)
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise CliError(f"invalid config {part!r}: use KEY=VALUE")
            value = value.strip()
            if value.startswith("[") and value.endswith("]"):
                value = value[1:-1]
            pairs.append((key.strip(), value))
    return pairs


def operations_of(args: argparse.Namespace) -> list[tuple[str, int, str | None]]:
    from odradek.cli import CliError

    operations = [(k, OP_SET, v) for k, v in split_pairs(args.add_config)]
    operations += [(k.strip(), OP_DELETE, None) for item in args.delete_config for k in item.split(",") if k.strip()]
    operations += [(k, OP_APPEND, v) for k, v in split_pairs(args.append_config)]
    operations += [(k, OP_SUBTRACT, v) for k, v in split_pairs(args.subtract_config)]
    if not operations:
        raise CliError("nothing to alter: give --add-config, --delete-config, --append-config or --subtract-config")
    return operations


def _module(connection: Any, api_key: int) -> Any:
    """kio's request module at the highest version both sides serve."""
    from odradek.client.connection import UnsupportedVersionError, payload_module

    low, high = CONFIGS_CLIENT_VERSIONS[api_key]
    broker = connection.broker_versions.get(api_key)
    if broker is None or min(high, broker[1]) < max(low, broker[0]):
        raise UnsupportedVersionError(f"broker {connection.address} does not serve the config APIs this tool uses")
    return payload_module(api_key, min(high, broker[1]), True)


async def run(client: Any, args: argparse.Namespace) -> int:
    """Run one `configs` action with a connected `odradek.client.client.Client`."""
    if args.configs_command == "describe":
        return await _describe(client, args)
    return await _alter(client, args)


async def _describe(client: Any, args: argparse.Namespace) -> int:
    from odradek.client.connection import KafkaError, make
    from odradek.protocol.errors import ErrorCode

    resource_type, name, words = entity_of(args)
    connection = await client._any_connection()
    module = _module(connection, DESCRIBE_CONFIGS)
    resource = make(module.DescribeConfigsResource, resource_type=resource_type, resource_name=name,
                    configuration_keys=None)
    response = await connection.send(make(module.DescribeConfigsRequest, resources=(resource,),
                                          include_synonyms=True, include_documentation=False))
    result = response.results[0]
    if result.error_code != ErrorCode.none:
        raise KafkaError(result.error_code, result.error_message, context=f"describe configs of {words}")
    wanted_sources = (1,) if resource_type == TOPIC else (3,) if name == "" else (2, 3)
    print(f"{'All' if args.all else 'Dynamic'} configs for {words} are:")
    for entry in result.configs:
        source = int(getattr(entry, "config_source", 0))
        if not args.all and source not in wanted_sources:
            continue
        value = "(sensitive)" if entry.is_sensitive else entry.value
        synonyms = ", ".join(f"{SOURCE_NAMES.get(int(s.source), s.source)}:{s.name}={s.value}"
                             for s in getattr(entry, "synonyms", ()))
        print(f"  {entry.name}={value} source={SOURCE_NAMES.get(source, source)} synonyms={{{synonyms}}}")
    return 0


async def _alter(client: Any, args: argparse.Namespace) -> int:
    from odradek.client.connection import KafkaError, make
    from odradek.protocol.errors import ErrorCode

    resource_type, name, words = entity_of(args)
    operations = operations_of(args)
    connection = await client._any_connection()
    module = _module(connection, INCREMENTAL_ALTER_CONFIGS)
    resource = make(module.AlterConfigsResource, resource_type=resource_type, resource_name=name,
                    configs=tuple(make(module.AlterableConfig, name=k, config_operation=op, value=v)
                                  for k, op, v in operations))
    response = await connection.send(make(module.IncrementalAlterConfigsRequest, resources=(resource,),
                                          validate_only=args.validate_only))
    result = response.responses[0]
    if result.error_code != ErrorCode.none:
        raise KafkaError(result.error_code, result.error_message, context=f"alter configs of {words}")
    verb = "Validated" if args.validate_only else "Completed updating"
    print(f"{verb} config for {words}.")
    return 0
