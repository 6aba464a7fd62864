"""The `tributary` command: the composition root that wires `offline` and `stream` commands.

It is the one place allowed to import both sides; `offline` and `stream` never import
each other.
"""

from __future__ import annotations

import click

from offline.cli import evaluate, generate, import_data, train
from stream.cli import broker, replay, topics, worker
from tributary.demo import demo


class _FriendlyErrors(click.Group):
    """Show errors that the user can fix (bad file, bad world, bad settings) as one clear
    message instead of a traceback; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        from models.worlds import WorldError
        from stream.kafka.client_args import SecuritySettingsError
        from stream.kafka.embedded_broker import BrokerError
        from models.artifacts import ArtifactError
        from stream.kafka.topics import TopicLayoutError

        try:
            return super().invoke(ctx)
        except (WorldError, SecuritySettingsError, BrokerError, TopicLayoutError, ArtifactError) as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=_FriendlyErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tributary")
def main() -> None:
    """Tributary: streaming fraud and donor-segment scoring over Kafka."""


main.add_command(generate)
main.add_command(import_data)
main.add_command(train)
main.add_command(evaluate)
main.add_command(broker)
main.add_command(replay)
main.add_command(topics)
main.add_command(demo)
main.add_command(worker)
