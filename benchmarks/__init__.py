"""The lab: measurements of what the notebooks and the Trainer path claim (see docs/)."""
