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


@users.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
def role(name: str, role: str) -> None:
    """Change NAME's role; their sessions and live connections end (tokens keep working, with the new role)."""
    try:
        services().users.set_role(name, role)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {name} is now {role}; their sessions ended")


@users.command("revoke-tokens")
@click.argument("name")
def revoke_tokens(name: str) -> None:
    """Revoke every API token of NAME; connections opened with them end within seconds."""
    click.echo(f"{services().users.revoke_tokens(name)} token(s) of {name} revoked")


@users.command("revoke-token")
def revoke_token() -> None:
    """Revoke the one API token read from standard input."""
    name = services().users.revoke_token(sys.stdin.readline().strip())
    if name is None:
        raise click.ClickException("no such token")
    click.echo(f"a token of {name} revoked")


@users.command("sign-out")
@click.argument("name")
def sign_out(name: str) -> None:
    """End every session of NAME (every browser, every web process)."""
    services().users.end_sessions(name)
    click.echo(f"every session of {name} ended")


@users.command("list")
def list_users() -> None:
    """List accounts and their roles."""
    for user in services().users.all():
        click.echo(f"{user.name}\t{user.role}")


@users.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Delete an account, its tokens and its sessions; its live connections end within seconds."""
    if not services().users.remove(name):
        raise click.ClickException(f"no user {name!r}")
    click.echo(f"user {name} removed")
