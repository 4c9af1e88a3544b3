"""Fake DingTalk and Feishu open platforms (and later a fake LLM), for tests and the sandbox."""
