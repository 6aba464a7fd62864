"""Model definitions shared by training (`offline`) and serving (`stream`)."""
