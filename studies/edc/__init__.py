"""Vendor EDC adapters (Medidata Rave, REDCap, Veeva Vault CDMS) behind one interface, and the sync
service that feeds what they pull to the importers."""
