"""The scoring graph of a trained SASRec, written to ONNX: portable and ONNX Runtime forms."""
