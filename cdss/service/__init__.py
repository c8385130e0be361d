"""The HTTP side of cdss: the web pages (`web`) and, with issue 11, the CDS Hooks service (`app`)."""
