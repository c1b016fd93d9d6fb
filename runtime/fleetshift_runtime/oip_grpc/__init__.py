"""The Open Inference Protocol v2 over gRPC, beside REST (``FLEETSHIFT_GRPC_PORT``).

``server.py`` serves ``inference.GRPCInferenceService`` from ``grpc_predict_v2.proto``;
``generate.py`` makes its message module from the proto. Nothing here is imported while
gRPC is off.
"""
