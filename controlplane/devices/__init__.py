"""Devices of a testbed: enrolment of agents, heartbeats, the profile used to emulate them."""
