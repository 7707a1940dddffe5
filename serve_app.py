"""The Ray Serve application: `serve run config/serve.yaml` imports `serve_app:build`."""

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.synthesizer import Synthesizer
from deployments.transcriber import Transcriber
from speech_service.config import ServiceSettings


def build(args: dict) -> Application:
    """Application builder; `args` are validated as `ServiceSettings`."""
    settings = ServiceSettings.model_validate(args or {})
    store = settings.store.model_dump()  # the model replicas leave their cold-start records there
    models = settings.model_dump(include={"models", "default_model", "accepted_models"})  # the registry
    return Ingress.bind(settings.model_dump(), Synthesizer.bind(store, models), Transcriber.bind(store))
