# Written by `aiship init` for a WSGI app: aiship's layer order, least to most often changed, so a
# model-only change pushes one layer and a code-only change leaves the dependencies alone:
#   base image -> dependencies -> app code -> (aiship's model layer, written by aiship itself).
# Builds need no network: aiship downloads the wheels of aiship.toml's [build] requirements on the
# host into wheels/ of the build context. Edit freely; keep the stage names aiship.toml names.
ARG BASE_IMAGE=aiship/base:bookworm-py311

FROM ${BASE_IMAGE} AS deps
COPY wheels/ /wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links=/wheels --no-cache-dir \
        --disable-pip-version-check -r /wheels/@requirements_name

FROM ${BASE_IMAGE} AS runtime
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN echo 'app:x:10001:10001:app:/srv:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'app:x:10001:' >> /etc/group \
 && mkdir -p /srv @model_dir
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_DIR=@model_dir
WORKDIR /srv
EXPOSE @port
USER 10001:10001
CMD ["gunicorn", "--bind", "0.0.0.0:@port", "--workers", "2", "@wsgi"]

# ---- the image that serves, without its model (aiship.toml's [build] code_stage)
FROM runtime AS code
COPY --from=deps /opt/venv /opt/venv
COPY @code_dir/ /srv/@code_dir/
ARG GIT_SHA=unknown
ENV GIT_SHA=${GIT_SHA}

# ---- the app's tests (aiship.toml's [tests] stage), run by aiship in a sandbox
FROM deps AS test-deps
RUN /opt/venv/bin/pip install --no-index --find-links=/wheels --no-cache-dir \
        --disable-pip-version-check -r /wheels/@requirements_name -r /wheels/@test_requirements_name

FROM runtime AS test
COPY --from=test-deps /opt/venv /opt/venv
COPY @code_dir/ /srv/@code_dir/
COPY @tests_dir/ /srv/@tests_dir/
