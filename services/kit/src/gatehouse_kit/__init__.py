"""The shared kit of Gatehouse services: settings, logging, metrics, gRPC server and client."""
