"""Instrument access: the ZeroMQ wire protocol, the server that hosts a driver, the async
client, and the driver base class with its registry."""
