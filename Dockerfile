# Image for docker-compose.yaml: the official Airflow 3 image plus this project's pinned requirements.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt pyproject.toml /opt/outreach/
COPY --chown=airflow:root plugins /opt/outreach/plugins
COPY --chown=airflow:root include /opt/outreach/include
# Airflow itself comes from the base image; keep it pinned while installing the rest.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/outreach/requirements.txt \
 && pip install --no-cache-dir --no-deps -e /opt/outreach
