# The aiship app image. Layers run from least to most often changed, so that a model-only change
# rebuilds (and pushes) only the last layer, and a code-only change leaves the dependencies alone:
#   base image -> dependencies (venv from host-prepared wheels) -> app code -> git SHA -> model.
# The build needs no network: flows/wheels.py downloads the wheels on the host into wheels/, and
# flows/image.py streams them with the source as the build context.
# aiship has dockerd build the `code` stage only and writes the model layer itself (flows/oci.py):
# a reproducible tar of the same two files the `model` stage below copies, so that the same inputs
# give the same image. `docker build .` with a model in model/ still gives a complete image by hand.
ARG BASE_IMAGE=aiship/base:bookworm-py311

# ---- dependencies, in their own stage so the wheels never reach the final image (no BuildKit
# here, so no RUN --mount: a COPY of the wheels in the final stage would stay in a layer).
FROM ${BASE_IMAGE} AS deps
COPY wheels/ /wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links=/wheels --no-cache-dir \
        --disable-pip-version-check -r /wheels/requirements.txt

# ---- what the served app and its tests share: user, folders, environment, how it starts
FROM ${BASE_IMAGE} AS runtime
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN echo 'app:x:10001:10001:aiship app:/srv:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'app:x:10001:' >> /etc/group \
 && mkdir -p /srv /opt/model /tmp/metrics \
 && chown 10001:10001 /tmp/metrics
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AISHIP_APP_MODEL_DIR=/opt/model
WORKDIR /srv
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
USER 10001:10001
# app/gunicorn.conf.py names the WSGI app (app:create_app()), the bind address and the workers.
CMD ["gunicorn", "--config", "app/gunicorn.conf.py"]

# ---- the app image without its model: what aiship builds with dockerd (aiship.toml's code_stage)
FROM runtime AS code
# gunicorn's workers share their metrics through this folder (app/metrics.py); the tests run without.
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/metrics
COPY --from=deps /opt/venv /opt/venv
# ---- app code: changes with every commit (its modules only: app/tests stays out of this image)
COPY app/*.py /srv/app/
# Declared after the code so that a new SHA never invalidates the dependency layers above.
ARG GIT_SHA=unknown
ENV AISHIP_APP_GIT_SHA=${GIT_SHA}

# ---- the app's tests (aiship.toml's [tests] stage), which aiship runs sandboxed (no network, no
# credentials, read-only, not root) before it builds anything to deliver. The test dependencies
# get a venv of their own, so they never reach the `code` image, and this stage adds only the
# code on top of cached layers.
FROM deps AS test-deps
RUN /opt/venv/bin/pip install --no-index --find-links=/wheels --no-cache-dir \
        --disable-pip-version-check -r /wheels/requirements.txt -r /wheels/requirements-test.txt
# hypothesis builds its unicode tables on first use of st.text (a second of every test run, since
# the sandbox keeps nothing between runs); build them once here, read-only at test time.
ENV HYPOTHESIS_STORAGE_DIRECTORY=/opt/hypothesis
RUN /opt/venv/bin/python -c "from hypothesis import strategies as st; st.text().validate()" \
    && test -n "$(find /opt/hypothesis/unicode_data -name 'charmap*')" && chmod -R a+rX /opt/hypothesis

FROM runtime AS test
COPY --from=test-deps /opt/venv /opt/venv
COPY --from=test-deps /opt/hypothesis /opt/hypothesis
ENV HYPOTHESIS_STORAGE_DIRECTORY=/opt/hypothesis
COPY app/ /srv/app/
CMD ["python", "-m", "pytest", "app/tests", "-q", "-p", "no:cacheprovider"]

# ---- the model, last: a model-only change rebuilds this one layer (labels are metadata only).
# aiship writes this layer itself (model.skops and manifest.json in /opt/model, root-owned, 0644).
FROM code AS model
COPY model/ /opt/model/
