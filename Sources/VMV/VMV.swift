// Measurement engine, measurement log store, crash recovery, boot sequence.
