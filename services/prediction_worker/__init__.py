"""The prediction worker: a faust stream from uploads to validated results."""
