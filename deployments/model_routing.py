"""Telling Serve's router which models this Synthesizer replica holds, so that a call made with the
handle option `multiplexed_model_id` goes to a replica where its model is warm (and, when none holds
it, to the replica holding the fewest).

`@serve.multiplexed` does this for a loader it wraps, but it fixes the models per replica when the
class is defined (ours is `max_models` in the user_config, changed live), keeps its LRU inside the
Ray shell where in-process tests cannot reach it, and frees a model only through its `__del__`. Our
`EngineCache` owns the models instead, and this module is the one place that reports them the way
the decorator's wrapper does (`ray/serve/multiplex.py`, `_push_model_ids_info`): a private call,
wrapped here and nowhere else.
"""

from __future__ import annotations

import logging

from ray import serve

logger = logging.getLogger("ray.serve")


def report_held_models(names: list[str]) -> None:
    """Record `names` (held or being loaded) as this replica's models with the Serve controller."""
    from ray.serve._private.common import RequestRoutingInfo
    from ray.serve.context import _get_global_client

    replica_id = serve.get_replica_context().replica_id
    _get_global_client().record_request_routing_info(
        RequestRoutingInfo(replica_id=replica_id, multiplexed_model_ids=sorted(set(names))))
    logger.info("this replica now holds models %s", ", ".join(names) or "none")
