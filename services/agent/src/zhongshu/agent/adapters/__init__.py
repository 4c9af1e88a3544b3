"""The agent's adapters to external systems; in Redis: the cluster-wide model-call gate
(``qps``), the inference cache (``inference_cache``) and conversation memory (``memory``)."""
