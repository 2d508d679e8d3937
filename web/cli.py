"""`flask --app web users ...`: manage accounts and API tokens (works with `heroku run`)."""
from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from web.extensions import services
from web.users import ROLES

users = AppGroup("users", help="Manage dashboard accounts and API tokens.")


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="operator", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add(name: str, role: str, password_stdin: bool) -> None:
    """Create an account (or replace its password and role)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        services().users.add(name, password, role)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {name} ({role}) saved")


@users.command("token")
@click.argument("name")
def token(name: str) -> None:
    """Print a new API token for NAME (shown once; use it as `Authorization: Bearer <token>`)."""
    try:
        click.echo(services().users.new_token(name))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@users.command("list")
def list_users() -> None:
    """List accounts and their roles."""
    for user in services().users.all():
        click.echo(f"{user.name}\t{user.role}")


@users.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Delete an account and all its tokens."""
    if not services().users.remove(name):
        raise click.ClickException(f"no user {name!r}")
    click.echo(f"user {name} removed")
