"""Outreach sequences engine: multi-step, multi-channel outreach run as an Airflow 3 pipeline."""

__version__ = "0.1.0"
