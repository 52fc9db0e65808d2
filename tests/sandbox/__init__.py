"""Tests of the HubSpot sandbox server (loader.sandbox)."""
