"""Pure science of the prediction worker: circadian rhythm metrics and sleep, on minute series
and device-reported sleep stages. No I/O, no Kafka, no clock; every result names its method."""
