"""The trickscope server: ingest of training statistics, storage, REST reads and live updates.

Build an application with :func:`trickscope_server.app.create_app`; nothing is built at import time.
"""
