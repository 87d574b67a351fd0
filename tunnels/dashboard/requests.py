"""Dashboard: the user's request history, filtered like ``/api/v1/requests/`` and paginated.

``accounts.history`` decides what each filter means and refuses bad values;
the page costs the same few queries whatever the filters or page.
"""

from __future__ import annotations

from django import forms
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from accounts import history
from accounts.models import ApiRequest
from tunnels.dashboard.base import mine, page
from tunnels.dashboard.forms import ServiceForm
from tunnelsite.errors import ServiceError

PAGE_SIZE = 50
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DATE = forms.DateInput(attrs={"type": "date"})


class RequestFilterForm(ServiceForm):
    """Every field is passed to ``accounts.history`` as typed: it, not this form, decides what is valid."""

    method = forms.ChoiceField(choices=[("", "any"), *((m, m) for m in METHODS)], required=False)
    status = forms.CharField(required=False, max_length=3, widget=forms.TextInput(attrs={"inputmode": "numeric"}))
    path_contains = forms.CharField(label="Path contains", required=False, max_length=500)
    since = forms.CharField(label="From", required=False, widget=DATE, help_text="On or after this day.")
    until = forms.CharField(label="To", required=False, widget=DATE, help_text="Up to the end of this day.")


def _page_number(request: HttpRequest) -> str:
    return request.GET.get("page") or "1"


def _filtered(request: HttpRequest, form: RequestFilterForm) -> bool:
    """Whether any filter was given (``?page=`` alone is not a filter)."""
    return any(request.GET.get(name) for name in form.fields)


@page
@require_http_methods(["GET"])
def request_list(request: HttpRequest) -> HttpResponse:
    form = RequestFilterForm(request.GET or None)
    rows = mine(request, ApiRequest.objects.all())
    status = 200
    if form.is_bound and form.is_valid():
        try:
            rows = history.filter_requests(rows, {k: v for k, v in form.cleaned_data.items() if v})
        except ServiceError as exc:
            form.add_service_error(exc)
    if form.errors:
        rows, status = rows.none(), 400
    page = Paginator(history.newest_first(rows), PAGE_SIZE).get_page(_page_number(request))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "filter_query": query.urlencode(), "filtered": _filtered(request, form)}
    return render(request, "dashboard/requests.html", context, status=status)
