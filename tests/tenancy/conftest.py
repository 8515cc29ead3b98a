"""The tenancy tests run as the plugin's app role (NOSUPERUSER NOBYPASSRLS, owning nothing) on
schemas the toolkit builds as the run's owner role: each module names its models in a
``sa_patterns_metadata`` fixture. ``superuser_sql`` reads what the database holds past RLS."""

from __future__ import annotations
