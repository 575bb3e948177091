"""Airflow triggers of the outreach engine (run in the triggerer)."""
