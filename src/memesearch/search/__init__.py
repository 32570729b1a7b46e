"""The read path: query terms to a vector, the search service, coalescing of concurrent scans."""
