"""Emitters that print a :class:`~tinywarden.program.Program` for a target (C today; TFLite, ONNX later)."""
