CREATE DATABASE outreach OWNER airflow;
