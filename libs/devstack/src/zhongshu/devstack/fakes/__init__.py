"""Fake DingTalk and Feishu open platforms, a fake OpenAI-compatible LLM and a callback receiver,
for tests, benches and the sandbox: independent implementations of what the services talk to."""
