# The IVC-LMS service image: gunicorn behind `ivclms serve`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 IVCLMS_HTTP_HOST=0.0.0.0 IVCLMS_DATA_DIR=/var/lib/ivclms
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY mappings ./mappings
COPY profiles ./profiles
# Base FHIR R4 definitions for the local validator (HAPI's validation-resources jar, sha1-checked), and
# the validator's caches under /app/data/fhir-r4/cache built now, at build time, as root: the service
# user (no write access to /app) then only reads them. The cache key is the jar and profiles/, both
# fixed in the image, so nothing is written on first use.
RUN pip install --no-cache-dir -e . && python -m service.validation.fetch /app/data/fhir-r4 \
    && python -m service.validation.warm /app/data/fhir-r4 \
    && useradd --system --home /var/lib/ivclms ivclms \
    && mkdir -p /var/lib/ivclms && chown ivclms /var/lib/ivclms
USER ivclms
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
CMD ["ivclms", "serve"]
